"""The model: the ground floor everything else stands on (docs/architecture.md).

Pure Python, no OpenTelemetry and no SDK: the one parameter registry (``parameters``), the one
codec (``codec``), the one merge engine (``merge``), what is in force (``in_force``), the wire
dialects (``dialects``), the outward forms (``attributes``, ``scope_attributes``,
``effective``) and where headers may go (``wire_policy``). Nothing here imports from outside
this package.
"""
