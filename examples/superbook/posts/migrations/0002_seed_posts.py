"""Seed three sample posts so the home page lists posts from the database right after deploy."""

from datetime import timedelta

from django.db import migrations
from django.utils import timezone

SEED_POSTS = [
    (
        "Welcome to SuperBook",
        "SuperBook is the demo app of the prodready.django collection. "
        "This page comes from PostgreSQL through Gunicorn, Varnish and Nginx.",
    ),
    (
        "Cached for everyone",
        "Anonymous visitors get this page from Varnish: it is public for a minute "
        "and sets no cookie. Logged-in users always reach Django.",
    ),
    (
        "Still up when the cache is down",
        "When Redis or Memcached stops, pages are computed again instead of failing, "
        "and /healthz reports the cache as degraded.",
    ),
]


def seed(apps, schema_editor):
    Post = apps.get_model("posts", "Post")
    db = schema_editor.connection.alias
    now = timezone.now()
    for age, (title, body) in enumerate(SEED_POSTS):  # the first is the newest
        Post.objects.using(db).get_or_create(
            title=title, defaults={"body": body, "created": now - timedelta(minutes=age)}
        )


def unseed(apps, schema_editor):
    Post = apps.get_model("posts", "Post")
    db = schema_editor.connection.alias
    Post.objects.using(db).filter(title__in=[title for title, _body in SEED_POSTS], author=None).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("posts", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
    ]
