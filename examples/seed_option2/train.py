# train.py

import os
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split
from runstream import Run
import joblib

import numpy as np
import mylib

os.makedirs('./outputs', exist_ok = True)

X, y = load_diabetes(return_X_y = True)

parent = Run.get_context()

X_train, X_test, y_train, y_test = train_test_split(X, y, test_size = 0.2, random_state = 0)
data = {"train": {"X": X_train, "y": y_train},
        "test": {"X": X_test, "y": y_test}}

# list of numbers from 0.0 to 1.0 with a 0.05 interval
alphas = mylib.get_alphas()

for alpha in alphas:
    # one child run per alpha, nested under the submitted run
    run = parent.child_run('alpha {0:.2f}'.format(alpha))

    # Use Ridge algorithm to create a regression model
    reg = Ridge(alpha = alpha)
    reg.fit(data["train"]["X"], data["train"]["y"])

    preds = reg.predict(data["test"]["X"])
    mse = mean_squared_error(preds, data["test"]["y"])
    # log the alpha and mse values
    run.log('alpha', alpha)
    run.log('mse', mse)

    model_file_name = 'outputs/ridge_{0:.2f}.pkl'.format(alpha)
    # save model in the outputs folder so it automatically get uploaded
    with open(model_file_name, "wb") as file:
        joblib.dump(value = reg, filename = model_file_name)

    # upload the model file explicitly into artifacts
    run.upload_file(name = model_file_name, path_or_stream = model_file_name)

    # register the model
    #run.register_model(file_name = model_file_name)

    run.complete()

    print('alpha is {0:.2f}, and mse is {1:0.2f}'.format(alpha, mse))
