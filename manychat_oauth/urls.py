from __future__ import annotations

from django.urls import path

from . import app_views, views

app_name = "manychat_oauth"

urlpatterns = [
    path("connect/", views.connect, name="connect"),
    path("callback/", views.callback, name="callback"),
    path("api-key/", views.connect_api_key, name="connect_api_key"),
    path("connections/", views.connections, name="connections"),
    path("connections/<int:pk>/disconnect/", views.disconnect, name="disconnect"),
    path("app/install/", app_views.app_install, name="app_install"),
    path("app/key/", app_views.connect_app_key, name="connect_app_key"),
]
