from django.urls import path

from blog import views

urlpatterns = [path("", views.home), path("login/", views.sign_in)]
