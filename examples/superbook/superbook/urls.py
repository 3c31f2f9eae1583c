"""URL map of the SuperBook demo."""
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path
from django.views.static import serve

from posts import views

from .envconfig import env_bool

urlpatterns = [
    path("", views.home, name="home"),
    path("popular/", views.popular, name="popular"),
    path("me/", views.me, name="me"),
    path("healthz", views.healthz, name="healthz"),
    path("version", views.version, name="version"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

# Bench only: `make bench` (scripts/bench.py) starts a second Gunicorn with
# SUPERBOOK_BENCH_STATIC_VIEW=1 to compare Django serving /static/ with Nginx.
# Nginx serves /static/ in production; the django_app role never sets this variable.
if env_bool("SUPERBOOK_BENCH_STATIC_VIEW", False):
    urlpatterns.append(
        re_path(r"^static/(?P<path>.+)$", serve, {"document_root": settings.STATIC_ROOT}),
    )
