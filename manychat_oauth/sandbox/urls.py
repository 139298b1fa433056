from __future__ import annotations

from django.urls import path

from . import views

app_name = "manychat_sandbox"

urlpatterns = [
    path("oauth/authorize", views.authorize, name="authorize"),
    path("oauth/token", views.token, name="token"),
    path("fb/page/getInfo", views.get_info, name="get_info"),
]
