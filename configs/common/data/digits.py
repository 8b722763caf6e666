# scikit-learn's handwritten digits as an ImageFolder (written under root on first use): the demo
# data.
from flowvision import transforms
from libai.config import LazyCall
from libai.data.build import build_image_test_loader
from omegaconf import OmegaConf

from libai_vit.data.build import build_train_loader
from libai_vit.data.digits import DigitsDataset

root = "./data/digits"
# px of the written PNGs (upscaled 8x8 scans); the transform resizes to the model's
stored_size = 32
to_tensor = LazyCall(transforms.Compose)(
    transforms=[
        # images follow model.img_size (no resize at 32)
        LazyCall(transforms.Resize)(size="${model.img_size}"),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ]
)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_train_loader)(
    dataset=[
        LazyCall(DigitsDataset)(root=root, train=True, transform=to_tensor, img_size=stored_size)
    ],
    num_workers=0,
    mixup_func=None,
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(DigitsDataset)(
            root=root, train=False, transform=to_tensor, img_size=stored_size
        ),
        num_workers=0,
    )
]
