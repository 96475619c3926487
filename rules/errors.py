"""The one error a rules directory raises: :class:`RulesError`, naming file, rule id and field."""

from __future__ import annotations


class RulesError(ValueError):
    """A rules directory that cannot be used, naming the file, rule id and field at fault."""

    def __init__(
        self, file: str, message: str, *, rule_id: str | None = None, field: str | None = None
    ) -> None:
        where = [file]
        if rule_id is not None:
            where.append(f"rule {rule_id}")
        if field is not None:
            where.append(f"field {field}")
        super().__init__(f"{': '.join(where)}: {message}")
        self.file = file
        self.rule_id = rule_id
        self.field = field
        self.message = message


__all__ = ["RulesError"]
