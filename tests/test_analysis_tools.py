"""Tests of tools/analysis_tools/{pool_similarity,visualize_pooling}.py."""
import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.io
import torch
from PIL import Image

from mmsoftpool.tools.analysis import load_image, pool, stochastic_pool
from mmsoftpool.tools.launch import UserError

TOOLS = Path(__file__).resolve().parents[1] / 'tools' / 'analysis_tools'


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pool_similarity = _load_tool('pool_similarity')
visualize_pooling = _load_tool('visualize_pooling')


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    """Three small crops of scikit-image photographs: colour and grey."""
    folder = tmp_path_factory.mktemp('images')
    skimage.io.imsave(folder / 'astronaut.png',
                      skimage.data.astronaut()[160:224, 180:244])
    skimage.io.imsave(folder / 'camera.png', skimage.data.camera()[100:160,
                                                                   200:270])
    skimage.io.imsave(folder / 'coffee.jpg', skimage.data.coffee()[100:171,
                                                                   100:166])
    (folder / 'notes.txt').write_text('not an image')
    return folder


def test_similarity_of_an_image_with_itself():
    image = load_image('astronaut')[:96, :96]
    ssim, psnr = pool_similarity.similarity(image, image)
    assert ssim == pytest.approx(1.0, abs=1e-12)
    assert psnr == math.inf


def test_pool_similarity_table_rows(image_dir, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    means = pool_similarity.main([
        '--img-dir',
        str(image_dir), '--kernels', '2', '3', '--out-dir',
        str(out_dir)
    ])
    methods = ['softpool', 'avg', 'max', 'power', 'stochastic']

    with open(out_dir / 'pool_similarity.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * len(methods)
    assert {r['image'] for r in rows} == {
        'astronaut.png', 'camera.png', 'coffee.jpg'
    }
    for row in rows:
        assert 0 < float(row['ssim']) < 1
        assert 10 < float(row['psnr']) < math.inf

    summary = json.loads((out_dir / 'pool_similarity.json').read_text())
    assert summary['images'] == ['astronaut.png', 'camera.png', 'coffee.jpg']
    assert summary['protocol']['upsample'] == 'nearest'
    assert len(summary['mean']) == len(means) == 2 * len(methods)
    assert len(summary['per_image']) == len(rows)
    # The mean of a column is the mean of its per-image rows.
    soft_k2 = [float(r['ssim']) for r in rows
               if r['method'] == 'softpool' and r['kernel'] == '2']
    entry = next(m for m in means
                 if m['method'] == 'softpool' and m['kernel'] == 2)
    assert entry['ssim'] == pytest.approx(np.mean(soft_k2))

    # Nearest upsampling compares each window with one constant; the window
    # mean is the least-squares one, so average pooling has the best PSNR.
    for kernel in (2, 3):
        psnr = {m['method']: m['psnr'] for m in means if m['kernel'] == kernel}
        assert max(psnr, key=psnr.get) == 'avg'
        assert psnr['max'] < psnr['softpool']

    table = capsys.readouterr().out
    for label in ('SoftPool', 'Average', 'Maximum', 'Power-average (p=2)',
                  'Stochastic (seed 0)'):
        assert f'| {label} |' in table
    assert '| Pooling | k=2 SSIM | k=2 PSNR | k=3 SSIM | k=3 PSNR |' in table


def test_nothing_lost_on_a_constant_image():
    image = np.full((24, 30, 3), 0.4)
    rows = pool_similarity.evaluate_image(
        image, 'constant', ['softpool', 'avg', 'max', 'power', 'stochastic'],
        [2, 5], 'bilinear', 1.0, 2.0, 0)
    assert len(rows) == 10
    for row in rows:
        assert row['ssim'] == pytest.approx(1.0, abs=1e-9), row
        assert row['psnr'] > 100, row


def test_scale_moves_softpool_from_average_to_max():
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    restore = pool_similarity.pool_and_restore
    for scale, like in ((1e-6, 'avg'), (1e4, 'max')):
        soft = restore(x, 'softpool', 3, 'nearest', scale, 2.0, 0)
        assert torch.allclose(
            soft, restore(x, like, 3, 'nearest', scale, 2.0, 0), atol=1e-3)


def test_pooled_values_lie_between_average_and_maximum():
    x = torch.rand(2, 3, 10, 15, dtype=torch.float64)
    avg, top = pool(x, 'avg', 3), pool(x, 'max', 3)
    for method in ('softpool', 'power', 'stochastic'):
        out = pool(x, method, 3, generator=torch.Generator().manual_seed(0))
        assert out.shape == avg.shape == (2, 3, 3, 5)
        if method != 'stochastic':
            assert (out >= avg - 1e-12).all() and (out <= top + 1e-12).all()
    # Stochastic pooling returns one of the window's own values.
    out = stochastic_pool(x, 3, generator=torch.Generator().manual_seed(0))
    windows = x.unfold(2, 3, 3).unfold(3, 3, 3).flatten(-2)
    assert (windows == out[..., None]).any(-1).all()


def test_stochastic_pool_samples_proportionally_with_a_seed():
    # 20000 windows holding (1, 3): 3 is drawn with probability 3/4.
    x = torch.tensor([1.0, 3.0]).repeat(1, 1, 20000, 1)
    draws = stochastic_pool(
        x, (1, 2), generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) == {1.0, 3.0}
    assert (draws == 3).double().mean().item() == pytest.approx(0.75, abs=0.015)
    again = stochastic_pool(
        x, (1, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    other = stochastic_pool(
        x, (1, 2), generator=torch.Generator().manual_seed(1))
    assert not torch.equal(draws, other)
    # An all-zero window gives 0; a single non-zero value is always drawn.
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]])[None, None]
    assert stochastic_pool(x, (1, 4)).flatten().tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match='non-negative'):
        stochastic_pool(-x, (1, 4))


def test_pool_similarity_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        pool_similarity.main(['--kernels', '1', '2'])
    with pytest.raises(SystemExit):
        pool_similarity.main(['--scale', '0'])
    with pytest.raises(UserError, match='no-such-picture'):
        pool_similarity.main(
            ['--images', 'no-such-picture', '--out-dir',
             str(tmp_path)])
    with pytest.raises(UserError, match='holds no files'):
        pool_similarity.main(
            ['--img-dir', str(tmp_path), '--out-dir',
             str(tmp_path)])
    with pytest.raises(ValueError, match='too small'):
        pool_similarity.evaluate_image(
            np.zeros((12, 12, 1)), 'tiny', ['avg'], [5], 'nearest', 1.0, 2.0,
            0)


def _png_size(path):
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_visualize_2d_writes_png_of_expected_size(image_dir, tmp_path):
    out = tmp_path / 'grid.png'
    written = visualize_pooling.main([
        str(image_dir / 'astronaut.png'), '--kernel', '3', '--stride', '2',
        '--panel-size', '64', '--out',
        str(out)
    ])
    assert written == out
    # Original, max, average, SoftPool; whole images above, zoom below.
    assert _png_size(out) == (4 * 64, 2 * 64)

    out = tmp_path / 'zoom.png'
    visualize_pooling.main([
        str(image_dir / 'camera.png'), '--kernel', '2', '--zoom', '10', '10',
        '20', '16', '--methods', 'softpool', 'stochastic', '--panel-size',
        '80', '--out',
        str(out)
    ])
    assert _png_size(out) == (3 * 80, 2 * 80)


def test_visualize_3d_clip_and_frames(image_dir, tmp_path):
    out = tmp_path / 'pan.png'
    visualize_pooling.main([
        str(image_dir / 'coffee.jpg'), '--kernel', '2', '2', '2', '--frames',
        '6', '--pan', '4', '--panel-size', '64', '--out',
        str(out)
    ])
    # 6 frames pooled by 2 in time: 3 columns; rows original + 3 methods.
    assert _png_size(out) == (3 * 64, 4 * 64)

    frames = tmp_path / 'frames'
    frames.mkdir()
    for t in range(5):
        skimage.io.imsave(
            frames / f'{t:03d}.png',
            skimage.data.camera()[t:t + 40, 2 * t:2 * t + 48],
            check_contrast=False)
    out = tmp_path / 'frames.png'
    visualize_pooling.main([
        str(frames), '--kernel', '2', '3', '3', '--frames', '4',
        '--panel-size', '64', '--out',
        str(out)
    ])
    assert _png_size(out) == (2 * 64, 4 * 64)


def test_visualize_bad_arguments(image_dir, tmp_path):
    with pytest.raises(SystemExit):  # a folder of frames needs a 3-D kernel
        visualize_pooling.main([str(image_dir), '--kernel', '2'])
    with pytest.raises(SystemExit):
        visualize_pooling.main(['astronaut', '--kernel', '2', '--stride', '1',
                                '1'])
    with pytest.raises(UserError, match='--zoom'):
        visualize_pooling.main([
            str(image_dir / 'camera.png'), '--zoom', '60', '0', '20', '20',
            '--out',
            str(tmp_path / 'x.png')
        ])
    with pytest.raises(UserError, match='fewer frames or a smaller pan'):
        visualize_pooling.main([
            str(image_dir / 'camera.png'), '--kernel', '2', '2', '2',
            '--frames', '8', '--pan', '20', '--out',
            str(tmp_path / 'x.png')
        ])
