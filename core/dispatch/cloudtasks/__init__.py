"""The Cloud Tasks queue: the client, the window, hand-overs, the checks and sweeps, OIDC."""
