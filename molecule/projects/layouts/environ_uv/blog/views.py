from django.contrib.auth import authenticate, login
from django.http import HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt


@cache_control(public=True, max_age=60)
def home(request):
    """Cached by Varnish for anonymous visitors; a signed-in writer sees their name."""
    who = request.user.username if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"Hello {who}")


@csrf_exempt
def sign_in(request):
    user = authenticate(request, username=request.POST.get("username"), password=request.POST.get("password"))
    if user is None:
        return HttpResponse("no", status=403)
    login(request, user)
    return HttpResponse("signed in")
