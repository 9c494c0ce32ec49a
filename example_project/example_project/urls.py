from demo import views
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", views.index, name="index"),
    path("enqueue/<slug:demo>/", views.enqueue, name="enqueue"),
    path("jobs.json", views.recent_jobs, name="recent_jobs"),
    path("hello/", views.hello, name="hello"),
    path("admin/", admin.site.urls),
    path("api/", include("django_asyncjobs.api.urls")),
]
