from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from manychat_oauth.models import ManychatConnection


def home(request: HttpRequest) -> HttpResponse:
    connections = (
        ManychatConnection.objects.for_user(request.user).exclude(status=ManychatConnection.Status.DISCONNECTED)
        if request.user.is_authenticated
        else ManychatConnection.objects.none()
    )
    return render(request, "home.html", {"connections": connections})
