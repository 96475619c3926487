"""``python -m serving.cli``, and the file ``spark-submit`` runs the ``lstep`` command from (it
needs a ``.py`` path; see the README's Spark section)."""

from serving.cli import app

if __name__ == "__main__":
    app()
