"""telemetryd: tails JSONL telemetry, counts events per pattern exactly once across crashes."""

__version__ = "0.1.0"
