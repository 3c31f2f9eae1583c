import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpResponse, JsonResponse
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from notes.models import Note


def home(request):
    return HttpResponse(f"{Note.objects.count()} notes <link rel=stylesheet href={static('notes/site.css')}>")


def about(request):
    return HttpResponse("about")


@csrf_exempt
@never_cache
def upload(request):
    """Saves a file under MEDIA_ROOT in a directory of its own, as an upload would."""
    if request.method != "POST":
        return HttpResponse(status=405)
    name = default_storage.save(f"uploads/{uuid.uuid4().hex}/note.txt", ContentFile(request.body))
    return JsonResponse({"url": default_storage.url(name)})
