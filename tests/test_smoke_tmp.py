import pytest
from django_asyncjobs.models import Job
from tests.conftest import relay, drain
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

def test_roundtrip(memory_transport):
    j = jobs.add.delay(2, 3)
    assert j.status == "scheduled"
    assert relay(memory_transport) == 1
    drain(memory_transport)
    j.refresh_from_db()
    assert j.status == "succeeded", (j.error, j.traceback)
    assert j.result == 5

def test_sqs_roundtrip(sqs_transport):
    j = jobs.SayHello.delay(name="x")
    assert relay(sqs_transport) == 1
    drain(sqs_transport)
    j.refresh_from_db()
    assert j.status == "succeeded", (j.error, j.traceback)
    assert j.result == "Hello, x!"
