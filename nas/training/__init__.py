"""Super-network fine-tuning: data, sub-network samplers, training strategies, the LightningModule."""
