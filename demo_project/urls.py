from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("manychat/", include("manychat_oauth.urls")),
]
if settings.MANYCHAT_SANDBOX:
    urlpatterns.append(path("sandbox/manychat/", include("manychat_oauth.sandbox.urls")))
