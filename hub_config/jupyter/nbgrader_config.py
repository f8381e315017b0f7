"""nbgrader's global config for the hub (copy or link it to /etc/jupyter/nbgrader_config.py).

Several courses share one hub (nbgrader's demos/demo_multiple_classes): the exchange keeps the
course in its paths and the JupyterHub plugin maps groups nbgrader-<course> and
formgrade-<course> to courses. Each course's own config (course_id, its folder) lives with its
grader account.
"""

import os

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.auth import JupyterHubAuthPlugin
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

from grader.autograde import use_sandbox

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.Exchange.path_includes_course = True
c.Exchange.root = os.environ.get("SMARTLAB_EXCHANGE", "/srv/nbgrader/exchange")
if os.environ.get("SMARTLAB_NBGRADER_EXCHANGE") == "ngshare":
    # Kubernetes (docs/deploy.md): pods share no folder and no uids, so the exchange is the
    # ngshare hub service, called with each user's own token (`ngshare_exchange`, in the image).
    from ngshare_exchange import configureExchange

    configureExchange(c)
c.Authenticator.plugin_class = JupyterHubAuthPlugin

# The timeout that actually applies to a cell (nbgrader #1004, #1463).
c.Execute.timeout = 120
# Hidden tests otherwise show up in the students' feedback (nbgrader #917).
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
# The formgrader's "autograde" runs student code in the sandbox (docs/grading.md): as a pool
# account without network, never as the grader account that owns the gradebook. `smartlab up`
# points the formgraders at its root fork server ($SMARTLAB_SANDBOX_SOCKET).
use_sandbox(c)
