"""The HTTP layer: BentoML services, request and response models, problems -> statuses, pages."""

from serving.settings import disable_telemetry

# BentoML reads its tracking opt-outs when it is imported, and every module of this package
# imports it: the package sets them first (there is no internet at run time).
disable_telemetry()
