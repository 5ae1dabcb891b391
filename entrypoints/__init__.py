"""odorch.runtime: the code that runs inside the training/serving container. It imports nothing
else of odorch, so that a training or model archive carries it alone."""
