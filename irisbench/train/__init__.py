"""Training: the GRPO maths, the rewards, the strict training config, the trainer and the shapes-world
pretraining, with what they write (checkpoints, model cards, tracking) and the reward-alignment probe."""
