def dashboard(request) -> dict:
    """`access` (the page's workspace and role, when it has one) for the layout's switcher and nav."""
    return {"access": getattr(request, "access", None)}
