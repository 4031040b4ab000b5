"""The `long_tailed_accuracy` evaluate metric: `evaluate.load(<this folder>)` loads it offline."""
