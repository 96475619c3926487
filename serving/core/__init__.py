"""Pure logic of serving: no clock, no I/O, no SQL, HTTP, MLflow or terminal libraries.

``assess`` (score -> decide -> explain) is the one path from a feature frame to what lstep says of
a learner; every caller (daily batch, the day's answers, the online scorer, ``lstep explain``, the
report) goes through it. ``planning`` decides which moves a store write applies, ``state`` holds
the normal form of a learner's stored state, ``problems`` the errors callers map to statuses.
"""
