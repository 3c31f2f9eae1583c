from django.urls import path

from notes import views

urlpatterns = [
    path("", views.home),
    path("upload/", views.upload),
    path("about/", views.about),
]
