"""URL map of the SuperBook demo."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from posts import views

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
