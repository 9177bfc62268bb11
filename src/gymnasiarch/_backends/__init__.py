"""The backend seam and the backends behind it.

``base`` is the seam: the run interface every backend implements, exit
status, remote tracebacks, ``Launch``. ``local`` runs children as
processes of this machine (through ``gymnasiarch._process``), ``fake``
scripts runs without a process for the supervisor's tests, and
``ray_host`` is Ray's node side (the public ``gymnasiarch.ray_backend`` is
the driver side); ``wakeup`` wakes an event-loop task from Ray's threads.
Empty on purpose: importing the seam loads no backend.
"""
