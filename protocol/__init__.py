"""The field protocol, version 1 (docs/protocol.md), in one place: its topics (built and parsed), its messages
(the reports, statuses, commands and acknowledgements, decoded and encoded side by side) and its limits. The
gateway, the command engine, the simulator, provisioning, the dispatcher and the demo all speak it from here.

Cheap to import: each module is imported by name, nothing here."""
