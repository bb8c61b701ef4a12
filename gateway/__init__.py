"""The MQTT edge: subscriber with manual acknowledgements, the pure codec, batching and metrics."""
