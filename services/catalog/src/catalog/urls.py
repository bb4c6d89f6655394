from meshkit.urls import *  # noqa: F403 - the JSON error handlers
from meshkit.urls import service_urlpatterns

urlpatterns = service_urlpatterns("catalog.api.api")
