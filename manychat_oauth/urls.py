from __future__ import annotations

from django.urls import path

from . import views

app_name = "manychat_oauth"

urlpatterns = [
    path("connect/", views.connect, name="connect"),
    path("callback/", views.callback, name="callback"),
    path("api-key/", views.connect_api_key, name="connect_api_key"),
    path("connections/", views.connections, name="connections"),
    path("connections/<int:pk>/disconnect/", views.disconnect, name="disconnect"),
]
