"""The converged zoo (zoo/converged/): its builder, its plan and the study of where transfer beats more training."""
