"""The web front: the Starlette app, its HTML pages, the sign-up flow."""
