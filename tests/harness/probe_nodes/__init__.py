"""Test-only nodes mounted next to the pack in the harness's ComfyUI:
one that sleeps with a progress bar, one that raises."""

import time


class TCProbeSlow:
    CATEGORY = "twitterchat_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "seconds": ("FLOAT", {"default": 2.0}),
                             "steps": ("INT", {"default": 10})}}

    def run(self, image, seconds, steps):
        import comfy.utils

        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (image,)


class TCProbeFail:
    CATEGORY = "twitterchat_tests"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "probe failure"})}}

    def run(self, image, message):
        def innermost():
            raise ValueError(message)

        innermost()


NODE_CLASS_MAPPINGS = {"TCProbeSlow": TCProbeSlow, "TCProbeFail": TCProbeFail}
