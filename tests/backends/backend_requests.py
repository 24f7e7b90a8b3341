"""Request builders the backend tests share: a raw prompt, or one user turn."""

from distill.backends.base import GenerationRequest, Sampling


def raw(rid, prompt, **sampling):
    return GenerationRequest(id=rid, sampling=Sampling(**sampling), prompt=prompt)


def chat(rid, text, **sampling):
    return GenerationRequest(id=rid, sampling=Sampling(**sampling),
                             messages=[{"role": "user", "content": text}])
