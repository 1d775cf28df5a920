"""This machine: what it has (``inventory``), what runs on it (``processes``,
``services``, ``containers``, with AI workloads recognised by ``ai``), sampled
over time with changes recorded (``sampler``, ``changes``), what a running
program is made of for a capture (``capture``), and the adaptation plan (what
an environment gets here, ``plan``)."""
