"""Django integration: settings, middleware, decorators and a django-ninja auth class.

Import the submodules (``meshauth.django.middleware``, ``.decorators``, ``.ninja``); this package
itself imports nothing from Django so that ``import meshauth.django`` stays cheap.
"""

__all__: list[str] = []
