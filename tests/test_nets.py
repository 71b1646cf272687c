import pytest
import torch
from conftest import compose

from litlab.config.check import check_config
from litlab.errors import LitlabError
from litlab.nets import CNN, MLP, SeedCNN


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_seed_cnn_has_the_keras_parameter_count():
    assert n_params(SeedCNN()) == 93_322


def test_seed_cnn_layers_match_the_article():
    net = SeedCNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    dense = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert len(pools) == 2
    assert [(d.in_features, d.out_features) for d in dense] == [(576, 64), (64, 10)]
    assert all(torch.all(m.bias == 0) for m in convs + dense)  # Keras' zero bias init


def test_pooling_before_relu_is_the_articles_conv_relu_pool():
    torch.manual_seed(0)
    net = SeedCNN()
    assert isinstance(net.features[1], torch.nn.MaxPool2d)  # pools first: ReLU on fewer values
    article_order = []  # conv -> relu -> pool, as the article's Keras layers
    for module in net.features:
        if isinstance(module, torch.nn.ReLU) and isinstance(article_order[-1], torch.nn.MaxPool2d):
            article_order.insert(-1, module)
        else:
            article_order.append(module)
    kinds = (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d)
    assert all(map(isinstance, article_order[:3], kinds))
    reference = torch.nn.Sequential(*article_order, net.head)
    x = torch.randn(8, 1, 28, 28)
    outputs, gradients = [], []
    for model in (net, reference):
        outputs.append(model(x))
        outputs[-1].square().sum().backward()
        gradients.append([p.grad.clone() for p in net.parameters()])
        net.zero_grad()
    assert torch.equal(*outputs)
    assert all(map(torch.equal, *gradients))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_mlp_activation_and_shapes(activation):
    net = MLP(hidden=(32, 16), activation=activation, dropout=0.1)
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    kinds = {type(m).__name__.lower() for m in net.modules()}
    assert activation in kinds


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_cnn_pooling_choice(pool):
    net = CNN(channels=(8, 16), pool=pool, pooled_blocks=2, hidden=(), num_classes=3)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    expected = torch.nn.MaxPool2d if pool == "max" else torch.nn.AvgPool2d
    assert sum(isinstance(m, expected) for m in net.modules()) == 2


def test_unknown_activation_and_pool_are_refused_by_the_config_check(tmp_path):
    for overrides, message in [
        (["model=mlp", "model.net.activation=gelu"], "activation='gelu' is not one of relu, "),
        (["model=cnn", "model.net.pool=min"], "model.net.pool='min' is not one of max, avg"),
    ]:
        with pytest.raises(LitlabError, match=message):
            check_config(compose(tmp_path, *overrides))
