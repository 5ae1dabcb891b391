"""Code that runs inside the training/serving container; never imports orchestrator or converters."""
