from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from .jobs import say_hello


def hello(request: HttpRequest) -> JsonResponse:
    """Enqueue "say hello" to run in 60 seconds and answer at once with the job's id."""
    name = request.GET.get("name", "world")
    job = say_hello.using(run_after=60).delay(name)
    return JsonResponse({"id": str(job.id), "status": job.status, "run_at": job.run_at}, status=202)
