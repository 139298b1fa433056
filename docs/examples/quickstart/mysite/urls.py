"""The quickstart's URLs."""

from django.contrib import admin
from django.urls import include, path

# --8<-- [start:urls]
urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),  # "login", "logout", ...
    path("manychat/", include("manychat_oauth.urls")),
]
# --8<-- [end:urls]
