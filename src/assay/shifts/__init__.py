"""Distribution shifts a model should survive: common corruptions."""
