"""odorch: object-detection fine-tuning orchestrator (CLI and backends)."""

__version__ = "0.1.0"
