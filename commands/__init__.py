"""Remote control (遥控): a command to many lamps is a campaign, paced out and tracked per lamp.

- `model`: the states, a campaign in memory, the request an operator makes, the package's errors;
- `targets`: what a target (lamps, cabinet and circuit, road, district, road class, city) means in lamps;
- `submit`: store a campaign and the override or schedule profile it implies (the API calls it);
- `queries`: progress, the audit trail, each lamp's outcome, cancel (the API calls them);
- `engine`: the `CommandEngine` that sends them at the city-wide pace and tracks the answers, woken by
  LISTEN/NOTIFY when a campaign is submitted or cancelled. Its MQTT side (commands out, acknowledgements in)
  is the gateway's `gateway.command_link`.
"""
