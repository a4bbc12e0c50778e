"""ma2ml_env placeholder: filled in next."""
