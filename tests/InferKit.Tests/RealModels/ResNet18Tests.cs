using InferKit.Models;
using InferKit.Tensors;
using InferKit.Tests.Backends;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML.OnnxRuntime;
using Real = InferKit.TestModels.RealModels;

// Not InferKit.Tests.RealModels: a namespace of that name would hide the RealModels class from every test namespace.
namespace InferKit.Tests.RealModelTests;

/// <summary>ResNet18 from its NuGet package, loaded once through InferKit and once through raw ONNX Runtime as the reference.</summary>
public sealed class ResNet18Fixture : IAsyncLifetime
{
    public ServiceProvider Services { get; private set; } = null!;

    public float[] Image { get; } = CreateImage(seed: 1);

    public float[] ReferenceFeatures { get; private set; } = [];

    public static float[] CreateImage(int seed)
    {
        var random = new Random(seed);
        var image = new float[3 * 224 * 224];
        for (int i = 0; i < image.Length; i++)
        {
            image[i] = (float)random.NextDouble() * 255f;
        }

        return image;
    }

    public static float[] RunRaw(InferenceSession session, float[] image)
    {
        using var runOptions = new RunOptions();
        using var input = OrtValue.CreateTensorValueFromMemory(image, [1, 3, 224, 224]);
        using var outputs = session.Run(runOptions, [Real.ResNet18Input], [input], [Real.ResNet18Output]);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public async Task InitializeAsync()
    {
        using (var session = new InferenceSession(Real.ResNet18Path))
        {
            ReferenceFeatures = RunRaw(session, Image);
        }

        Services = OnnxTestServices.Build(b => b.AddOnnxModel("resnet18", Real.ResNet18Path, o => o.Onnx.IntraOpThreads = 2));
        await Services.Registry().LoadAllAsync();
    }

    public async Task DisposeAsync() => await Services.DisposeAsync();
}

public sealed class ResNet18Tests(ResNet18Fixture fixture) : IClassFixture<ResNet18Fixture>
{
    private IInferenceClient Client => fixture.Services.Client();

    [Fact]
    public void The_package_copies_the_model_to_the_output_folder()
    {
        Assert.StartsWith(Path.GetFullPath(AppContext.BaseDirectory), Real.ResNet18Path, StringComparison.Ordinal);
        Assert.True(new FileInfo(Real.ResNet18Path).Length > 40_000_000);
    }

    [Fact]
    public void Its_signature_has_a_fixed_batch_of_one_so_it_is_not_batchable()
    {
        var info = fixture.Services.Registry().GetModel("resnet18");
        Assert.Equal(ModelState.Ready, info.State);
        var signature = info.Signature!;
        Assert.False(signature.IsBatchable);
        var input = Assert.Single(signature.Inputs);
        Assert.Equal(Real.ResNet18Input, input.Name);
        Assert.Equal(TensorElementType.Float32, input.ElementType);
        Assert.Equal(Real.ResNet18InputShape, input.Shape);
        var output = Assert.Single(signature.Outputs);
        Assert.Equal(Real.ResNet18Output, output.Name);
        Assert.Equal(Real.ResNet18OutputShape, output.Shape);
    }

    [Fact]
    public async Task It_gives_512_features_equal_to_raw_ONNX_Runtime()
    {
        using var response = await Client.InferAsync("resnet18", new InferenceRequest(Tensor.Create(Real.ResNet18Input, fixture.Image, 1, 3, 224, 224)));

        Assert.True(response.IsSuccess, response.Message);
        var features = response[Real.ResNet18Output];
        Assert.Equal(new long[] { 1, 512, 1, 1 }, features.Shape.ToArray());
        var values = features.GetSpan<float>();
        Assert.Contains(values.ToArray(), v => v != 0);
        Assert.All(values.ToArray(), v => Assert.True(float.IsFinite(v)));
        OnnxTestServices.AssertClose(fixture.ReferenceFeatures, values, 1e-3, "features");
    }

    [Fact]
    public async Task Concurrent_images_are_served_one_at_a_time_and_each_gets_its_own_features()
    {
        var images = new[] { ResNet18Fixture.CreateImage(2), ResNet18Fixture.CreateImage(3) };
        var responses = await Task.WhenAll(images.Select(image =>
            Client.InferAsync("resnet18", new InferenceRequest(Tensor.Create(Real.ResNet18Input, image, 1, 3, 224, 224))).AsTask()));
        try
        {
            Assert.All(responses, r => Assert.True(r.IsSuccess, r.Message));
            Assert.All(responses, r => Assert.Equal(1, r.BatchSize));
            var first = responses[0][Real.ResNet18Output].ToArray<float>();
            var second = responses[1][Real.ResNet18Output].ToArray<float>();
            Assert.NotEqual(first, second);

            // Image 2 alone gives the same features as in the concurrent run.
            using var alone = await Client.InferAsync("resnet18", new InferenceRequest(Tensor.Create(Real.ResNet18Input, images[0], 1, 3, 224, 224)));
            OnnxTestServices.AssertClose(first, alone[Real.ResNet18Output].GetSpan<float>(), 1e-4, "image 2");
        }
        finally
        {
            foreach (var r in responses)
            {
                r.Dispose();
            }
        }
    }

    [Fact]
    public async Task Two_images_in_one_request_are_refused_naming_the_fixed_dimension()
    {
        var ex = await Assert.ThrowsAsync<InvalidInferenceRequestException>(async () => await Client.InferAsync("resnet18",
            new InferenceRequest(Tensor.Create(Real.ResNet18Input, new float[2 * 3 * 224 * 224], 2, 3, 224, 224))));
        Assert.Equal("resnet18", ex.Model);
        Assert.Equal(Real.ResNet18Input, ex.Input);
        Assert.Contains("[1,3,224,224]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("[2,3,224,224]", ex.Message, StringComparison.Ordinal);
    }
}
