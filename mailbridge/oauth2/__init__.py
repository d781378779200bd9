"""OAuth2 sign-in: token refresh (`tokens`), client presets (`presets`)."""
