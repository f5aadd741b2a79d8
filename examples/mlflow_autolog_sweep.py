# The seed's Ridge sweep (option 2's train.py) written with MLflow and nothing else:
# mlflow.sklearn.autolog() logs each fit's params, training metrics and the model; the
# test mse is logged by hand, as the seed does. Pointed at runstream, it runs unchanged:
#
#   MLFLOW_TRACKING_URI=http://127.0.0.1:8080 python examples/mlflow_autolog_sweep.py
#
# The parent run and its 20 child runs (nested=True) show in runstream's UI.
import mlflow
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

mlflow.set_experiment("diabetes-ridge-mlflow")
mlflow.sklearn.autolog()

# list of numbers from 0.0 to 1.0 with a 0.05 interval
alphas = np.arange(0.0, 1.0, 0.05)

with mlflow.start_run(run_name="sweep"):
    for alpha in alphas:
        with mlflow.start_run(run_name="alpha {0:.2f}".format(alpha), nested=True):
            reg = Ridge(alpha=alpha)
            reg.fit(X_train, y_train)
            mse = mean_squared_error(y_test, reg.predict(X_test))
            mlflow.log_metric("mse", mse)
            print("alpha is {0:.2f}, and mse is {1:0.2f}".format(alpha, mse))
