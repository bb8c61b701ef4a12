"""The MQTT edge: subscriber with manual acknowledgements, the pure codec, batching and metrics."""

from gateway.codec import decode_batch
from gateway.mqtt import MqttSubscriber
from gateway.service import Gateway

__all__ = ["Gateway", "MqttSubscriber", "decode_batch"]
