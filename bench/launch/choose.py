"""The launcher of a command, chosen once by its name (--launcher) from the command line's options."""

from __future__ import annotations

from bench.launch.base import Launcher, LaunchOptions
from bench.launch.local import LocalLauncher
from bench.launch.slurm import SlurmLauncher
from bench.launch.watchdog import Limits

LAUNCHERS: dict[str, type[Launcher]] = {launcher.name: launcher for launcher in (LocalLauncher, SlurmLauncher)}


def choose_launcher(name: str, limits: Limits, options: LaunchOptions) -> Launcher:
    """The launcher called name, made from the options given to it.

    LaunchError names an option it does not take or cannot use; LauncherUnavailable says why it
    cannot be used from this machine.
    """
    return LAUNCHERS[name].from_options(limits, options)
