"""pipelines: the loops (self_augment, specialist_augment) — order and resume only; logic lives in curator and vila2_model."""
