"""What prodready.django's deploy role puts into every release, next to manage.py.

- settings: the settings overlay (deploy_django_settings: overlay), the project's own
  settings module first, then what the host owns, from /etc/<app>/env;
- environment: the parsers of that environment file (DATABASE_URL, CACHE_URL...);
- cache: a Redis cache backend that answers "miss" while Redis is down;
- wsgi: the project's WSGI app for Gunicorn, behind the built-in health check (health);
- migration_check: what the deploy asks before it migrates.
"""
