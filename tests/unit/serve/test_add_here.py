"""Where `index add` embeds: in its own process for a few videos on a private instance, else on Ray."""

from ncl_ray.serve.add_here import HERE_MAX, embeds_here


def test_a_few_videos_on_a_private_instance_are_embedded_here(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert embeds_here(1, "") and embeds_here(HERE_MAX, "")
    assert not embeds_here(HERE_MAX + 1, "")


def test_a_cluster_always_gets_the_work(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not embeds_here(1, "ray://head:10001")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert not embeds_here(1, "")
