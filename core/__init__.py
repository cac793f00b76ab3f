"""Pure helpers every app stands on (no models, no Django apps): money and calendar months."""
