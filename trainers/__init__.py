"""Everything that runs the models: the two training loops on one base trainer, their data, checkpoints and
configs, the work behind the inference commands, and the demo. No architecture lives here."""
