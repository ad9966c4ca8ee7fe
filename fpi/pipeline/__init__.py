"""How a batch of whole sessions becomes verdicts: features, quantiles, the model, rules and explanations, run by one `Pipeline`."""
